"""FASTA -> zarr genome store -> WebDataset shards. The command-line entry points are `prepare.py` and
`synthetic.py`; the other modules hold one concept each so the loaders and tests can import them."""
