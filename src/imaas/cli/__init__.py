"""The ``imaas`` command line."""
