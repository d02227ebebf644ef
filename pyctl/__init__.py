"""pyctl: bare-metal GPU servers to a verified Kubernetes training cluster, with Ansible."""

__version__ = "0.1.0"
