"""Weight formats of other libraries read as refsim integer codes (one module per format)."""
