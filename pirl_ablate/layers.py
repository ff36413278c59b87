"""The trunk's layer names (paper Table 7 / Figure 5), in a module without torch so reports can import it."""

LAYERS = ("conv1", "res2", "res3", "res4", "res5")
