"""The language: an equation parsed (parser) into an immutable tree (ast) that prints back in our
notation and in LaTeX (printer), its sizes bound and checked (sizes), and its errors (errors)."""
