"""MPR images: reading exports, the one cleanup function, the image store and its manifest."""
