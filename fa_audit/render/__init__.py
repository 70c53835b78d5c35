"""Drawing results: the terminal tables (rich), Markdown sections, GitHub annotations and
plots that the output formats of :mod:`fa_audit.formats` and the terminal use."""
