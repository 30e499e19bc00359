"""compute.proxy: secrets, DNS and outbound HTTP served by the node pool (docs/proxy.md)."""
