"""A real Kubernetes control plane and S3 server on loopback, plus a process-based node agent."""
