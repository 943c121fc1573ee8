"""Spectral units: the names godrun accepts, the x-axis conversions to nm and the y conversions on request.

y units (canonical name: accepted spellings, case-insensitive):
* `absorbance`: A, abs, absorbance, absorbance units, AU, log(1/T), log(1/R), OD (decadic: A = −log10 T);
* `transmittance`: T, transmittance, transmission (a fraction, 1 = all light through);
* `percent_transmittance`: %T, percent transmittance, transmittance (%), transmission (%) (100 · T);
* `reflectance`, `percent_reflectance`: R, reflectance; %R (100 · R);
* `counts`: counts, raw counts, intensity, signal (a detector's raw reading; no conversion defined);
* `arbitrary`: a.u., arb. units, arbitrary units (no conversion defined).
Conversions (`godrun data import --to-unit`): between absorbance, transmittance and percent transmittance
(T = 10^−A, A = −log10 T, %T = 100 · T), and between reflectance and percent reflectance. A transmittance
≤ 0 has no absorbance, and one above 2 (200 %) is a percentage declared as a fraction: both refused, naming
the file. Any other pair is refused.

x units: nm (nanometers, wavelength), µm (um, micrometers, microns: nm = 1000 · x), cm⁻¹ (1/cm, cm-1,
wavenumber: nm = 1e7 / x, x > 0).
"""

from __future__ import annotations

import re

import numpy as np

from godrun.errors import InputError

UNITS = ("absorbance", "transmittance", "percent_transmittance", "reflectance", "percent_reflectance", "counts",
         "arbitrary")  # fmt: skip
_ALIASES = {
    "absorbance": ("a", "abs", "absorbance", "absorbance units", "abs.", "au", "absorbance (au)", "absorbance(au)",
                   "log(1/t)", "log(1/r)", "optical density", "od"),
    "transmittance": ("t", "transmittance", "transmission", "transmittance (fraction)"),
    "percent_transmittance": ("%t", "t%", "% t", "% transmittance", "percent transmittance", "percent_transmittance",
                              "transmittance (%)", "transmission (%)", "transmittance %", "%transmittance"),
    "reflectance": ("r", "reflectance"),
    "percent_reflectance": ("%r", "% r", "% reflectance", "percent reflectance", "percent_reflectance",
                            "reflectance (%)"),
    "counts": ("counts", "count", "raw counts", "intensity", "signal", "cts"),
    "arbitrary": ("a.u.", "arb. units", "arbitrary units", "arbitrary", "arb"),
}  # fmt: skip
_LOOKUP = {alias: unit for unit, names in _ALIASES.items() for alias in names}
MAX_TRANSMITTANCE = 2.0  # a fraction above this is a %T mislabelled, not noise around 1
_CONVERTIBLE = ({"absorbance", "transmittance", "percent_transmittance"}, {"reflectance", "percent_reflectance"})
_X_ALIASES = {
    "nm": ("nm", "nanometers", "nanometer", "nanometres", "wavelength", "wavelength (nm)", "wavelength_nm",
           "wavelength[nm]", "wavelength [nm]", "lambda", "wl"),
    "um": ("um", "µm", "μm", "micrometers", "micrometres", "microns", "micron", "wavelength (um)",
           "wavelength (µm)", "wavelength [µm]", "wavelength [um]"),
    "cm-1": ("cm-1", "1/cm", "cm^-1", "cm⁻¹", "wavenumber", "wavenumbers", "wavenumber (cm-1)",
             "wavenumber (1/cm)", "wavenumber [cm-1]", "wavenumbers (cm-1)"),
}  # fmt: skip
_X_LOOKUP = {alias: unit for unit, names in _X_ALIASES.items() for alias in names}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip('"').lower())


def canonical(name: str, where: str) -> str:
    """The canonical unit of `name`; InputError naming `where` when it is not one godrun knows."""
    unit = _LOOKUP.get(_norm(name))
    if unit is None:
        raise InputError(f"{where}: unknown unit {name!r} (known: {', '.join(UNITS)})")
    return unit


def unit_in_header(cell: str) -> str | None:
    """The unit a column header names, if any (`Absorbance`, `%T`, `Intensity (counts)` ...)."""
    text = _norm(cell)
    if text in _LOOKUP:
        return _LOOKUP[text]
    inner = re.search(r"[\(\[]([^\)\]]+)[\)\]]", text)
    return _LOOKUP.get(inner.group(1).strip()) if inner else None


def x_unit_of(cell: str, where: str) -> str:
    """The x unit a header cell or ##XUNITS names; nm when it names none of the known ones but a plain label."""
    text = _norm(cell)
    if text in _X_LOOKUP:
        return _X_LOOKUP[text]
    for unit, names in (("cm-1", ("cm-1", "1/cm", "cm^-1", "wavenumber")), ("um", ("µm", "μm", "micro", "(um)"))):
        if any(n in text for n in names):
            return unit
    if "nm" in text or "nanomet" in text or "wavelength" in text:
        return "nm"
    if text in ("x", "", "index") or not re.search(r"(hz|ev|sec|second|min|pixel|ppm|m/z|degree|time)", text):
        return "nm"
    raise InputError(f"{where}: x axis in {cell!r}, not a wavelength unit godrun converts (nm, µm, cm-1)")


def is_x_header(cell: str) -> bool:
    """Whether a header cell names an x axis (`nm`, `Wavelength (nm)`, `cm-1` ...), not a spectrum."""
    return _norm(cell) in _X_LOOKUP


def to_nm(x: np.ndarray, x_unit: str, where: str) -> np.ndarray:
    if x_unit == "nm":
        return x
    if x_unit == "um":
        return x * 1000.0
    if x_unit == "cm-1":
        if np.any(x <= 0):
            raise InputError(f"{where}: wavenumber {float(x[x <= 0][0]):g} cm-1 is not positive")
        return 1e7 / x
    raise InputError(f"{where}: unknown x unit {x_unit!r}")


def convert(values: np.ndarray, src: str, dst: str, where: str) -> np.ndarray:
    """`values` in unit `src` as unit `dst` (see the module doc); InputError when no conversion is defined."""
    if src == dst:
        return values
    if not any(src in g and dst in g for g in _CONVERTIBLE):
        raise InputError(f"{where}: no conversion from {src} to {dst}")
    if src == "percent_transmittance" or src == "percent_reflectance":
        values, src = values / 100.0, src.removeprefix("percent_")
    if src == "absorbance":
        values, src = np.power(10.0, -values), "transmittance"
    if dst == "absorbance":
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            raise InputError(f"{where}: transmittance {values[bad[0]]:g} <= 0 has no absorbance")
        over = np.flatnonzero(values > MAX_TRANSMITTANCE)
        if over.size:  # noise puts a T a little above 1, never above MAX_TRANSMITTANCE
            raise InputError(
                f"{where}: transmittance {values[over[0]]:g} > {MAX_TRANSMITTANCE:g} (a percentage declared as a "
                "fraction? declare %T)"
            )
        return -np.log10(values)
    return values * 100.0 if dst.startswith("percent_") else values
