"""Developer tools (code generation, settings for throwaway local stacks in tests and benchmarks);
nothing at run time imports them."""
