"""Developer tools (code generation, settings for throwaway local stacks in tests and benchmarks,
soak-run sampling and bounds, the reliability harness: faults under load, reconciled); nothing
at run time imports them."""
