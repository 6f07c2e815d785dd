"""Package data (installed as ``editprobe.schemas``): the JSON Schemas of every file format. Read through
:mod:`editprobe.resources`; there is no code here."""
