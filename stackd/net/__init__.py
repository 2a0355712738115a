"""Networking: IPAM, bridges, veth pairs, published ports and service DNS."""
