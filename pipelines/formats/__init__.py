"""Readers and writers of the formats users bring: region features (BUTD TSV, MMF/ViLBERT .npy, .npz), captions, Flickr30k Entities."""
