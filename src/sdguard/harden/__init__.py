"""harden"""
