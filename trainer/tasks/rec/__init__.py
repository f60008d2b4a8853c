"""Referring-expression comprehension (RefCOCO/+/g): the refer reader, the REC model, its data, its metric and its command line."""
