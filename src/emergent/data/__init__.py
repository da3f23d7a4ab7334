"""Data: sources, file formats, preparation, quality checks and Lightning data modules."""
