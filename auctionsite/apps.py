from django.apps import AppConfig


class AuctionsiteConfig(AppConfig):
    name = "auctionsite"
    verbose_name = "Auction site"
