"""Specifications of ``runyard.adapters``: each adapter against its real
framework (with the framework's own fake or test models), end to end through
a real runtime on the memory store."""
