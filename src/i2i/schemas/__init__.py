"""JSON Schemas of i2i's file formats, shipped as package data (see `i2i.repository`)."""
