"""The virtual membership: synthetic members that react to what Tenure does to them."""
