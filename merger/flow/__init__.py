"""The layer that joins the stages (merge, train, evaluate): run options, a worker's workspace, the steps of work a
candidate goes through and the plan that picks its next one, and the library calls behind `merger validate`,
`merger merge` and `merger train`. Above it, `sweep/` drives many candidates; below it, each stage knows only itself.
"""
