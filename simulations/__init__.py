"""Simulations of tw-mesh at scale: file durability under churn, and a swarm of real mesh code.

Run `python -m simulations.durability --help` and `python -m simulations.swarm --help`.
"""
