"""Model specs and instruments shared by the stages and by facet_eval: generator and classifier
configs (one YAML per id), the CLIP zero-shot classifier, and the offline zoo of tiny models."""
