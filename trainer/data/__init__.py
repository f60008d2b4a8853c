"""The data chain of pre-training: shard discovery and pairing (``shards``), the webdataset chain (``chain``), pair sampling, masking, text."""
