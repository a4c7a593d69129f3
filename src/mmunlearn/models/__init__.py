"""Models: one loading path for every image-text-to-text model, and the embedded tiny default."""
