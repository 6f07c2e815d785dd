"""benchmark: apply an editor to a causal LM and measure uncertainty before and after the edit."""
