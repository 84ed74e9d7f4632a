"""The config layer: every key a user can set, declared once with its type, default, range and help (declare.py;
the keys of the model: model.py, of the data: data.py, of the Trainer that gptlab acts on: trainer.py, of gptlab's
own components: components.py, of each command: run.py), and what is derived from the declarations: the Hydra
schemas and --help (compose.py), the check of a composed config (validate.py), run directories (rundir.py) and
the command-line contract of one error line (cli.py). Needs neither torch nor lightning: a config is composed,
checked and refused in a fraction of a second. Imports only gptlab.errors."""
