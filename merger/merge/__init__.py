"""The merge stage: mergekit configs checked against mergekit, merged to disk or in memory."""
