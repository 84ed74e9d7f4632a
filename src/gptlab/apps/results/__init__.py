"""What runs leave behind, read and shown: result.json (result.py), runs read back (runs.py), the sweep table
(table.py), figures (figures.py). No torch: these read files."""
