"""Writes a 320x240 PNG with white text on black (the OCR detector's test frame).

  python make_text_image.py OUT.png
"""
import sys

from PIL import Image, ImageDraw, ImageFont

image = Image.new("RGB", (320, 240), "black")
ImageDraw.Draw(image).text((60, 90), "HELLO 42", fill="white", font=ImageFont.load_default(size=40))
image.save(sys.argv[1])
