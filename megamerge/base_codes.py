"""The byte a base is stored as, on disk and in memory: written by data_prep (the genome store and
the shards' `seq` members) and read by the loader. torch-free, so that importing it costs
prepare.py's start-up nothing.

    byte & CODE_BITS     the base code, the model's id: A=0 C=1 G=2 T=3 N=4 (ALPHABET's order)
    byte & SOFTMASK_BIT  set where the input FASTA had the base in lower case (soft-masked)
"""

ALPHABET = "ACGTN"
CODE_BITS = 0x07
SOFTMASK_BIT = 0x08
