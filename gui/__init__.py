"""The memo desktop console (PySide6): `memo gui`. A thin layer over the appliance API the CLI uses."""
