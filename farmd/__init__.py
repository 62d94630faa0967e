"""farmd: a Qube-style hierarchical render/compute farm scheduler."""

__version__ = "0.1.0"
