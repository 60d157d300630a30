"""The player's window: image, slider, buttons, frame spinbox, speed, device and backend
choices, status line and keys (Tk thread only).

:func:`build_window` lays the widgets out on the Tk root and stores the ones the player reads
back as attributes of the player (``photo``, ``image``, ``slider``, ``play_button``,
``frame_var``, ``spinbox``, ``speed_var``, ``device_var``, ``backend_var``, ``backend_box``,
``backend_label``, ``status``); their callbacks are the player's methods.
"""

from __future__ import annotations

from typing import Any

from tvl_async.cli.play.worker import SPEEDS, devices

TITLE = "tvl-async player"


def build_window(p: Any, root: Any, *, speed: float, device: str, backend: str) -> None:
    """Lay out the window of player ``p`` on ``root``; call once, from the Tk thread."""
    import tkinter as tk
    from tkinter import ttk

    root.title(TITLE)
    root.protocol("WM_DELETE_WINDOW", p.close)
    p.photo = tk.PhotoImage(width=320, height=180)
    p.image = tk.Label(root, image=p.photo, background="black", borderwidth=0)
    p.image.grid(row=0, column=0, sticky="n")

    p.slider = tk.Scale(
        root,
        from_=0,
        to=0,
        orient="horizontal",
        showvalue=False,
        command=p._on_slider,
        length=320,
    )
    p.slider.grid(row=1, column=0, sticky="ew", padx=4)

    bar = ttk.Frame(root)
    bar.grid(row=2, column=0, sticky="ew", padx=4, pady=2)
    ttk.Button(bar, text="Open…", command=p.ask_open).pack(side="left")
    ttk.Button(bar, text="◀|", width=3, command=lambda: p.step(-1)).pack(side="left")
    p.play_button = ttk.Button(bar, text="Play", width=6, command=p.toggle)
    p.play_button.pack(side="left")
    ttk.Button(bar, text="|▶", width=3, command=lambda: p.step(1)).pack(side="left")
    ttk.Label(bar, text=" frame").pack(side="left")
    p.frame_var = tk.StringVar(value="0")
    p.spinbox = tk.Spinbox(
        bar, from_=0, to=0, width=7, textvariable=p.frame_var, command=p._on_spinbox
    )
    p.spinbox.bind("<Return>", lambda _e: p._on_spinbox())
    p.spinbox.bind("<KP_Enter>", lambda _e: p._on_spinbox())
    p.spinbox.pack(side="left")
    ttk.Label(bar, text=" speed").pack(side="left")
    label = next((k for k, v in SPEEDS.items() if v == speed), f"{speed:g}x")
    p.speed_var = tk.StringVar(value=label)
    speed_box = ttk.Combobox(
        bar, textvariable=p.speed_var, values=list(SPEEDS), width=6, state="readonly"
    )
    speed_box.bind("<<ComboboxSelected>>", lambda _e: p._on_speed())
    speed_box.pack(side="left")

    p.device_var = tk.StringVar(value=device)
    devices_here = devices()
    if len(devices_here) > 1:
        ttk.Label(bar, text=" device").pack(side="left")
        box = ttk.Combobox(
            bar, textvariable=p.device_var, values=devices_here, width=7, state="readonly"
        )
        box.bind("<<ComboboxSelected>>", lambda _e: p._on_device())
        box.pack(side="left")
    p.backend_var = tk.StringVar(value=backend)
    p.backend_box = ttk.Combobox(bar, textvariable=p.backend_var, width=6, state="readonly")
    p.backend_box.bind("<<ComboboxSelected>>", lambda _e: p._on_device())
    p.backend_label = ttk.Label(bar, text=" backend")
    p._update_backend_choice()

    p.status = tk.StringVar(value="no file: press Open…")
    ttk.Label(root, textvariable=p.status, anchor="w", font="TkFixedFont").grid(
        row=3, column=0, sticky="ew", padx=4, pady=(0, 4)
    )
    root.columnconfigure(0, weight=1)

    for key, action in (
        ("<space>", p.toggle),
        ("<Right>", lambda: p.step(1)),
        ("<Left>", lambda: p.step(-1)),
        ("<Home>", lambda: p.seek(0)),
        ("<End>", lambda: p.seek(p.n_frames - 1)),
        ("<o>", p.ask_open),
    ):
        root.bind(key, p._key(action))
