"""Sensors: the landing-zone sensor (the S3 trigger of the original design) arrives with issue #3."""

import dagster as dg

defs = dg.Definitions()
