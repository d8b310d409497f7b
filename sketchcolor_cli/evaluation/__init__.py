"""Evaluation: how exactly colorized frames match their ground truth (BasicPBC's metrics)."""

from sketchcolor_cli.evaluation.metrics import (
    METRIC_NAMES,
    METRIC_TITLES,
    CutScores,
    FrameScores,
    evaluate_paths,
    frame_number,
    line_mask,
    read_label_map,
    score_cut,
    score_frame,
    scores_table,
    scores_to_dict,
    segment_labels,
    segments_from_colors,
)

__all__ = [
    "METRIC_NAMES",
    "METRIC_TITLES",
    "CutScores",
    "FrameScores",
    "evaluate_paths",
    "frame_number",
    "line_mask",
    "read_label_map",
    "score_cut",
    "score_frame",
    "scores_table",
    "scores_to_dict",
    "segment_labels",
    "segments_from_colors",
]
