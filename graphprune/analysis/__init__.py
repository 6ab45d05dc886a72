"""Stage 1b: analyses that read a traced graph and produce IR (groups, blocks, costs). They never rewrite."""
