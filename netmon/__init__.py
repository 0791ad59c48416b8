"""netmon: a terminal live monitor that groups network traffic by behaviour."""

__version__ = "0.1.0"
