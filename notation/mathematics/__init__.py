"""The mathematics: elementwise functions with their derivatives (functions), closed-form constants
(constants), the einsum gradient rule (derive), and the literal loop interpreter (reference)."""
