"""From a search to a result: export (NNI's trials to a table), retrain (winners and baselines over seeds, scored on
the test split), evaluate (scikit-learn metrics, torch.export of the model), plots, report (one command from an
experiment to a report), predict (classify image files with an exported model, torch and Pillow only)."""
