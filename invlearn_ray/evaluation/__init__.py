"""Exact metrics (AUC, GAUC, NDCG, MRR, Recall) and the full-catalogue ranking protocols."""
