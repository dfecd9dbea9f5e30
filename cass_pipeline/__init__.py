"""CASS: coronary artery stenosis scoring from CCTA reports and curved MPR images."""

__version__ = "0.1.0"
