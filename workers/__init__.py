"""Runtime: projector workers, the ingress gateway, replay/rebuild and the ``streamshop`` CLI."""
