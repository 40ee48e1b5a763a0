"""Which of the node's outputs a bag run writes (``--outputs``).

A fleet's bags are mostly the tool's outputs, so the default leaves out what is only a copy of
something else in the bag: the point cloud carries x y z and colour but not the normals (they are
``normals/image``, pixel for pixel), and a sharpened frame gets its refined outputs only (see
``ProcessBagOptions.write_core``). Everything ``config/lotus2.rviz`` shows is there.

Names (comma-separated; ``default`` and ``all`` expand):

==================  ============================================================================
``disparity``       the relative depth output (32FC1): ``disparity``, or ``relative_depth`` for
                    Lotus-1 models that predict depth
``uncertainty``     ``depth/uncertainty`` (Lotus-G ensembles: per-pixel std, 32FC1)
``depth``           ``depth/image`` (metres, 32FC1; frames with a metric reference)
``normals``         ``normals/image`` (32FC3, optical frame)
``points``          ``points`` (organised cloud: x y z rgb)
``point_normals``   ``points`` with ``normal_x/y/z`` too (as the live node publishes it)
``colorized``       ``depth/colorized`` and ``normals/colorized`` (or one: ``depth_colorized``,
                    ``normals_colorized``)
``scale_fit``       ``scale_fit`` (LiDAR / depth-image references)
``default``         disparity, depth, normals, points, colorized, scale_fit, uncertainty
``all``             everything, clouds with normals: all the node publishes
==================  ============================================================================

``depth/camera_info`` (the calibration every image is aligned with) is always written. A name
whose output the run cannot produce (``depth`` without a metric reference) is simply not written.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Output names → the (relative, base) topics they write.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "disparity": ("disparity", "relative_depth"),
    "uncertainty": ("depth/uncertainty",),
    "depth": ("depth/image",),
    "normals": ("normals/image",),
    "points": ("points",),
    "point_normals": ("points",),
    "colorized": ("depth/colorized", "normals/colorized"),
    "depth_colorized": ("depth/colorized",),
    "normals_colorized": ("normals/colorized",),
    "scale_fit": ("scale_fit",),
}
DEFAULT_OUTPUTS = ("disparity", "depth", "normals", "points", "colorized", "scale_fit", "uncertainty")
#: Written whatever the selection.
ALWAYS = ("depth/camera_info",)


@dataclass(frozen=True)
class OutputSelection:
    """The outputs a run writes.

    Attributes:
        names: Canonical names (sorted, expanded) from :data:`OUTPUT_NAMES`.
    """

    names: tuple[str, ...] = tuple(sorted(DEFAULT_OUTPUTS))

    def __post_init__(self):
        unknown = [n for n in self.names if n not in OUTPUT_NAMES]
        if unknown:
            raise ValueError(f"unknown output(s) {', '.join(unknown)}; choose from "
                             f"{', '.join([*OUTPUT_NAMES, 'default', 'all'])}")
        object.__setattr__(self, "names", tuple(sorted(set(self.names))))

    @classmethod
    def parse(cls, text: str) -> OutputSelection:
        """``"default"``, ``"all"`` or a comma-separated list of names (may mix in ``default``)."""
        names: list[str] = []
        for item in (t.strip() for t in text.split(",")):
            if item == "default":
                names += DEFAULT_OUTPUTS
            elif item == "all":
                names += OUTPUT_NAMES
            elif item:
                names.append(item)
        if not names:
            raise ValueError(f"--outputs names no output: {text!r}")
        return cls(tuple(names))

    @property
    def topics(self) -> frozenset[str]:
        """Base topics written (``depth/camera_info`` always)."""
        return frozenset(t for n in self.names for t in OUTPUT_NAMES[n]) | frozenset(ALWAYS)

    @property
    def cloud_normals(self) -> bool:
        """Whether clouds carry ``normal_x/y/z``."""
        return "point_normals" in self.names

    def __str__(self) -> str:
        return ",".join(self.names)


DEFAULT_SELECTION = OutputSelection()
ALL_OUTPUTS = OutputSelection(tuple(OUTPUT_NAMES))
