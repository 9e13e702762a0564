"""Examples of hiercls (not part of the installed library): ``python -m examples.<name>.<script>``."""
