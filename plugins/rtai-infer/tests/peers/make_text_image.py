"""Writes a 320x240 PNG with white text on black (the OCR detector's test frame),
or with "line" a 192x48 text line, black on white (the text direction classifier's),
upside down with "line upside-down".

  python make_text_image.py OUT.png [line [upside-down]]
"""
import sys

from PIL import Image, ImageDraw, ImageFont

if sys.argv[2:3] == ["line"]:
    image = Image.new("RGB", (192, 48), "white")
    ImageDraw.Draw(image).text((8, 4), "HELLO 42", fill="black", font=ImageFont.load_default(size=36))
    if sys.argv[3:] == ["upside-down"]:
        image = image.rotate(180)
else:
    image = Image.new("RGB", (320, 240), "black")
    ImageDraw.Draw(image).text((60, 90), "HELLO 42", fill="white", font=ImageFont.load_default(size=40))
image.save(sys.argv[1])
