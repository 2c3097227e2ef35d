"""Candidates a sweep makes after its first stage, one module each: `refine` (the best of a stage trained further),
`references` (the merges' input models, scored as they are). Each is a function of the candidates so far and their
ranking, returning the new candidates; the driver journals them and scores them like any other."""
