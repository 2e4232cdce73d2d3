"""Example services of an order flow, written against the public streamtools API only."""
