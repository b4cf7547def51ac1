"""Batched integration.

Lock-step loops (`lockstep`), Runge-Kutta lanes (`rk`), the Pallas kernel (`pallas`), CPU
devices (`devices`).
"""
