"""The path of a frame: source -> detect -> crop/classify -> track -> alert -> publish, and the loop that wires them."""
