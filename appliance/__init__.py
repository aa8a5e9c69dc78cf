"""memo: a memory appliance for regulated, air-gapped organisations."""

__version__ = "0.1.0"
