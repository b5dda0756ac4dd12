"""The ops, one module per family. Each op is a `Function` subclass plus a
lower-case wrapper that validates arguments and documents shapes and maths."""
