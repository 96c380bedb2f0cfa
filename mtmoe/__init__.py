"""mtmoe: where should Mixture-of-Experts layers go in actor-critic agents under non-stationarity?"""

__version__ = "0.1.0"
