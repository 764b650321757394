"""The publisher: reads the node's chain tip every interval and publishes a TipReport."""
