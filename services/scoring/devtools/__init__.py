"""Developer tools (code generation); nothing at run time imports them."""
